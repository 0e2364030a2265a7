"""The daemon's settings: one frozen dataclass, read from TOML, overridden by flags.

``robot-daemon run --config daemon.toml`` reads a flat TOML table whose keys are the
field names of :class:`DaemonConfig` (``docs/daemon-reference.md`` lists them); :func:`load`
overrides the file with the flags. Validation is strict, because a typo in a config file
on a robot must stop the service with a message rather than serve with a default. Serving
(:mod:`robot_daemon.serve`), online learning (:mod:`robot_daemon.learn`), ``watch`` and
``bag play`` share it.

Design: docs/architecture.md, "The daemon's settings".
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from robot_daemon.errors import ConfigError

DEFAULT_MODEL: Final = Path("models/default.npz")
#: What can capture a frame (robot_daemon.capture.triggers.REASONS, without importing it).
CAPTURE_TRIGGERS: Final = ("uncertain", "disagree", "contradict", "health")
DEFAULT_FRAMES: Final = ("tcp://127.0.0.1:5556",)
DEFAULT_PRED: Final = "tcp://127.0.0.1:5557"
# ZeroMQ's default receive high-water mark (1000) lost a third of a burst in our
# measurements; 100,000 frames of ~90 bytes cost under 10 MB at worst.
DEFAULT_RCVHWM: Final = 100_000
#: A source is stale after this silence (:mod:`robot_daemon.serve.liveness`): 10 periods
#: of a 50 Hz sensor, ten frames in a row missing, which the loss of a few frames or a
#: 100 ms hiccup of the OS or the network does not reach, while a planner still learns of
#: a dead sensor within a quarter of a second (22 cm at 1 m/s).
DEFAULT_STALE_AFTER_MS: Final = 200.0

#: Settings that name files or directories (made Path; relative to a config file's dir).
_PATHS: Final = ("model", "shadow", "capture", "checkpoint_dir", "curve_secret_key",
                 "curve_allow")
_SCHEMES: Final = ("tcp://", "ipc://", "inproc://")
_LOOPBACK_NAMES: Final = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


@dataclass(frozen=True)
class DaemonConfig:
    """Everything ``robot-daemon run`` needs; every field has a documented default.

    model : the model file (``.npz``) served and reloaded on SIGHUP.
    frames : endpoints of the sensor publishers; the daemon's SUB socket connects to each.
    labels : endpoint of the labelled-frame publisher; the daemon's label SUB connects.
    online : fine-tune the model from ``labels`` between ticks (:mod:`robot_daemon.learn.session`).
    online_batch, online_lr : labelled frames per SGD step and its learning rate.
    shadow : a candidate model run beside the serving one on the same frames, after each
        tick's ``pred`` (:mod:`robot_daemon.serve.shadow`); none: off.
    capture : a directory for capture bags: the frames the triggers pick
        (:mod:`robot_daemon.serve.capturing`); none: off.
    capture_max_mb : the hard bound on the capture bags in ``capture``, MB.
    capture_margin : a served probability this close to its threshold is captured.
    capture_rate : frames captured a second at most, on average.
    capture_triggers : which triggers capture: ``uncertain``, ``disagree`` (with a
        shadow), ``contradict`` (with online learning), ``health``.
    checkpoint_dir : where online learning saves checkpoints (none: learning is lost at exit).
    checkpoint_every_steps, checkpoint_every_s : save after this many accepted steps, or
        this many seconds after the last save if the model changed since (whichever first).
    checkpoint_keep : checkpoints kept (the newest ones).
    curve_secret_key : the daemon's CURVE key pair (a ``.key_secret`` file): the label
        socket becomes a CURVE server.
    curve_allow : directory of the public keys (``.key``) of allowed label publishers.
    insecure_labels : allow online learning from a non-loopback endpoint without CURVE.
    pred : endpoint the daemon's PUB socket binds for ``pred`` and ``status``.
    interval_ms : the tick interval in milliseconds.
    max_batch : most frames answered per tick; older ones are dropped and counted.
    status_interval_s : seconds between ``status`` messages.
    log_summary_s : seconds between summary lines in the log (and the journal): a state
        change is logged when it happens, the counters at this pace.
    tick_phase : ``"auto"``: the tick grid moves to fall just after the frames of the
        sensors with a stable phase, and a tick goes out as soon as their frames came
        (:mod:`robot_daemon.serve.phase`); ``"fixed"``: it stays where the daemon started
        it, and every tick waits for its deadline.
    stale_after_ms : a frames endpoint or ``src`` silent this long is stale
        (:mod:`robot_daemon.serve.liveness`); checked at each tick.
    rcvhwm : the SUB socket's receive high-water mark, in messages.
    metrics : ``PORT`` or ``ADDRESS:PORT`` of a Prometheus endpoint, served by an exporter
        process the daemon starts (:mod:`robot_daemon.serve.exporter_child`); none: off.
        A bare port is loopback; ``pred`` must not be ``inproc://``.
    allow_remote_bind : permit ``pred`` and ``metrics`` to bind a non-loopback address.
    log_level : ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``.
    """

    model: Path = DEFAULT_MODEL
    shadow: Path | None = None
    capture: Path | None = None
    capture_max_mb: float = 1000.0
    capture_margin: float = 0.05
    capture_rate: float = 10.0
    capture_triggers: tuple[str, ...] = CAPTURE_TRIGGERS
    frames: tuple[str, ...] = DEFAULT_FRAMES
    labels: str | None = None
    online: bool = False
    online_batch: int = 100
    online_lr: float = 0.1
    checkpoint_dir: Path | None = None
    checkpoint_every_steps: int = 100
    checkpoint_every_s: float = 60.0
    checkpoint_keep: int = 5
    curve_secret_key: Path | None = None
    curve_allow: Path | None = None
    insecure_labels: bool = False
    pred: str = DEFAULT_PRED
    interval_ms: float = 20.0
    max_batch: int = 256
    status_interval_s: float = 1.0
    log_summary_s: float = 60.0
    tick_phase: str = "auto"
    stale_after_ms: float = DEFAULT_STALE_AFTER_MS
    rcvhwm: int = DEFAULT_RCVHWM
    metrics: str | None = None
    allow_remote_bind: bool = False
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        validate(self)

    @property
    def interval_ns(self) -> int:
        """The tick interval in integer nanoseconds."""
        return round(self.interval_ms * 1e6)

    @property
    def status_interval_ns(self) -> int:
        """The status interval in integer nanoseconds."""
        return round(self.status_interval_s * 1e9)

    @property
    def stale_after_ns(self) -> int:
        """The silence after which a source is stale, in integer nanoseconds."""
        return round(self.stale_after_ms * 1e6)


# Field name -> accepted Python types of its TOML value (bool is not an int here).
_TOML_TYPES: Final[Mapping[str, tuple[type, ...]]] = {
    "model": (str,),
    "frames": (list, str),
    "labels": (str,),
    "online": (bool,),
    "online_batch": (int,),
    "online_lr": (int, float),
    "shadow": (str,),
    "capture": (str,),
    "capture_max_mb": (int, float),
    "capture_margin": (int, float),
    "capture_rate": (int, float),
    "capture_triggers": (list,),
    "checkpoint_dir": (str,),
    "checkpoint_every_steps": (int,),
    "checkpoint_every_s": (int, float),
    "checkpoint_keep": (int,),
    "curve_secret_key": (str,),
    "curve_allow": (str,),
    "insecure_labels": (bool,),
    "pred": (str,),
    "interval_ms": (int, float),
    "max_batch": (int,),
    "status_interval_s": (int, float),
    "log_summary_s": (int, float),
    "tick_phase": (str,),
    "stale_after_ms": (int, float),
    "rcvhwm": (int,),
    "metrics": (str, int),
    "allow_remote_bind": (bool,),
    "log_level": (str,),
}
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
TICK_PHASES: Final = ("fixed", "auto")


def load(
    path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None
) -> DaemonConfig:
    """The defaults, updated by the TOML file at ``path``, then by ``overrides`` (flags).

    ``overrides`` maps field names to values; ``None`` values are ignored, so that argparse
    results can be passed as they are.

    Raises:
        ConfigError: the file is missing, not TOML, or holds an invalid setting.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_toml(Path(path)))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = sorted(values.keys() - _TOML_TYPES.keys())
    if unknown:  # only reachable from a programming error in the caller
        raise ConfigError(f"unknown setting(s) {unknown}")
    for key in _PATHS:
        if key in values:
            values[key] = Path(values[key])
    for key in ("frames", "capture_triggers"):
        if key in values:
            values[key] = tuple(values[key])
    return DaemonConfig(**values)


def read_toml(path: Path) -> dict[str, Any]:
    """The settings of a TOML config file, type-checked; relative ``model`` made absolute."""
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _TOML_TYPES:
            raise ConfigError(
                f"config file {path}: unknown key {key!r}; known keys: "
                f"{', '.join(sorted(_TOML_TYPES))}"
            )
        if type(value) not in _TOML_TYPES[key]:
            wanted = " or ".join(t.__name__ for t in _TOML_TYPES[key])
            raise ConfigError(
                f"config file {path}: {key} must be {wanted}, got {type(value).__name__}"
                f" {value!r}"
            )
        if key == "frames" and isinstance(value, str):
            value = [value]
        elif key == "metrics":
            value = str(value)  # a bare port may be written as a TOML integer
        values[key] = value
    for key in _PATHS:
        if key in values:
            values[key] = path.parent / values[key]
    return values


def validate(config: DaemonConfig) -> None:
    """Raise :class:`ConfigError` naming the first invalid setting of ``config``."""
    if not isinstance(config.model, Path) or not str(config.model):
        raise ConfigError("model must be a path to a model file (.npz)")
    if config.shadow is not None and (not isinstance(config.shadow, Path)
                                      or not str(config.shadow)):
        raise ConfigError("shadow must be a path to a model file (.npz)")
    _validate_capture(config)
    if not config.frames:
        raise ConfigError("frames needs at least one publisher endpoint to connect to")
    for endpoint in config.frames:
        check_endpoint(endpoint, "frames")
    if len(set(config.frames)) != len(config.frames):
        raise ConfigError(f"frames lists an endpoint twice: {list(config.frames)}")
    if config.labels is not None:
        check_endpoint(config.labels, "labels")
    check_endpoint(config.pred, "pred")
    if not config.allow_remote_bind and not is_local_endpoint(config.pred):
        raise ConfigError(
            f"pred {config.pred!r} would publish on the network; bind a loopback address "
            "(tcp://127.0.0.1:PORT) or ipc://, or set allow_remote_bind = true"
        )
    if config.metrics is not None:
        check_metrics_address(config.metrics, config.allow_remote_bind)
        _check_reachable_pred(config.pred)
    _validate_online(config)
    _check_number("interval_ms", config.interval_ms, 1.0, 60_000.0)
    _check_number("status_interval_s", config.status_interval_s, 0.01, 3600.0)
    _check_number("log_summary_s", config.log_summary_s, 0.01, 86_400.0)
    _check_number("stale_after_ms", config.stale_after_ms, 10.0, 600_000.0)
    _check_int("max_batch", config.max_batch, 1, 65_536)
    _check_int("rcvhwm", config.rcvhwm, 1, 10_000_000)
    if type(config.allow_remote_bind) is not bool:
        raise ConfigError("allow_remote_bind must be true or false")
    if config.tick_phase not in TICK_PHASES:
        raise ConfigError(f"tick_phase must be one of {', '.join(TICK_PHASES)}")
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")


def _check_reachable_pred(pred: str) -> None:
    """With ``metrics``: the exporter, a process of its own, connects to ``pred`` to read
    the daemon's status, so ``pred`` must name a place it can connect to: an IP address
    (or ``*``, reached on loopback) and a port, or an ipc:// path. An interface name
    (``tcp://lo:5557``) or ``ipc://*`` left the exporter connecting to nothing, its
    status age growing and its alert firing while the daemon was fine."""
    fix = "bind pred to tcp://127.0.0.1:PORT or ipc:///run/robot-daemon/pred"
    if pred.startswith("inproc://"):
        raise ConfigError(
            f"metrics needs a pred endpoint another process can reach: the exporter is "
            f"a process of its own that reads status from pred, and {pred!r} exists only "
            f"inside the daemon; {fix}")
    if pred.startswith("ipc://"):
        if pred == "ipc://*":
            raise ConfigError(f"metrics needs pred at a known ipc path, not {pred!r} (a "
                              f"random one the exporter cannot find); {fix}")
        return
    host = pred[len("tcp://"):].rpartition(":")[0]  # check_endpoint made the port a number
    literal = host.strip("[]")
    try:
        ipaddress.ip_address(literal)
    except ValueError:
        if host not in ("*", "localhost"):
            raise ConfigError(
                f"metrics needs pred at an IP address the exporter can connect to; "
                f"{pred!r} names {host!r}, an interface or a host name; {fix}") from None


def _validate_online(config: DaemonConfig) -> None:
    """The online-learning settings: numbers in range, and no unprotected remote labels."""
    _check_int("online_batch", config.online_batch, 1, 10_000)
    _check_number("online_lr", config.online_lr, 1e-9, 10.0)
    _check_int("checkpoint_every_steps", config.checkpoint_every_steps, 1, 10_000_000)
    _check_number("checkpoint_every_s", config.checkpoint_every_s, 0.1, 86_400.0)
    _check_int("checkpoint_keep", config.checkpoint_keep, 1, 1_000)
    for name in ("online", "insecure_labels"):
        if type(getattr(config, name)) is not bool:
            raise ConfigError(f"{name} must be true or false")
    if (config.curve_secret_key is None) != (config.curve_allow is None):
        raise ConfigError(
            "curve_secret_key and curve_allow go together: the daemon's key pair and the "
            "directory of the publishers it accepts (docs/security.md)"
        )
    if config.online and config.labels is None:
        raise ConfigError("online learning needs a labels endpoint (--labels ENDPOINT)")
    if config.labels is None or not (config.online or config.capture is not None):
        return  # no label socket is opened
    if (config.curve_secret_key is None and not config.insecure_labels
            and not is_local_endpoint(config.labels)):
        raise ConfigError(
            f"labels {config.labels!r} is not on this machine, and labels change the model"
            " (online, or trained on from the capture): "
            "anyone who can reach it could retrain the robot's perception. Protect it with "
            "CURVE (curve_secret_key + curve_allow, see docs/security.md), or set "
            "insecure_labels = true if that network is trusted"
        )


def check_endpoint(endpoint: object, name: str, *, bind: bool = False) -> None:
    """Refuse anything but ``tcp://HOST:PORT``, ``ipc://PATH`` or ``inproc://NAME``; an
    endpoint to ``bind`` may also take any free port (``tcp://127.0.0.1:*``)."""
    if not isinstance(endpoint, str) or not endpoint.startswith(_SCHEMES):
        raise ConfigError(
            f"{name}: {endpoint!r} is not a ZeroMQ endpoint; use tcp://HOST:PORT, "
            "ipc:///path/to/socket or inproc://name"
        )
    rest = endpoint.split("://", 1)[1]
    if not rest:
        raise ConfigError(f"{name}: {endpoint!r} lacks an address after '://'")
    if endpoint.startswith("tcp://"):
        host, _, port = rest.rpartition(":")
        if bind and host and port == "*":
            return
        if not host or not port.isdigit() or not 0 < int(port) < 65_536:
            raise ConfigError(f"{name}: {endpoint!r} needs a host and a port 1-65535")


def is_local_endpoint(endpoint: str) -> bool:
    """Whether binding ``endpoint`` stays on this machine (ipc, inproc, loopback tcp)."""
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint[len("tcp://"):].rpartition(":")[0].strip("[]")
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a host name: not provably loopback


def metrics_address(text: str) -> tuple[str, int]:
    """``"9108"`` -> ``("127.0.0.1", 9108)``; ``"0.0.0.0:9108"``, ``"[::1]:9108"`` as given.

    Raises:
        ConfigError: not a port, or not an IP address and port.
    """
    host, sep, port_text = str(text).rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    try:
        port = int(port_text)
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"metrics address {text!r}: give PORT (loopback) or ADDRESS:PORT with an IP"
            " address, e.g. 9108 or 0.0.0.0:9108"
        ) from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"metrics address {text!r}: port must be 0-65535")
    return host, port


def check_metrics_address(text: str, allow_remote_bind: bool) -> tuple[str, int]:
    """:func:`metrics_address`, refusing a non-loopback address unless ``allow_remote_bind``.

    Raises:
        ConfigError: not an address, or one on the network without ``allow_remote_bind``.
    """
    host, port = metrics_address(text)
    if not allow_remote_bind and not ipaddress.ip_address(host).is_loopback:
        raise ConfigError(
            f"metrics {text!r} would serve on the network; give a port alone (loopback), or"
            " allow it: allow_remote_bind = true (run), --allow-remote-bind (metrics)"
        )
    return host, port


def _check_number(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer from {low} to {high}, got {value!r}")


def describe(config: DaemonConfig) -> str:
    """One line with every setting, for the start-up log."""
    parts = [
        f"{f.name}={getattr(config, f.name)}"
        for f in dataclasses.fields(config)
    ]
    return " ".join(parts)


def _validate_capture(config: DaemonConfig) -> None:
    """The capture settings: numbers in range and known triggers (the directory itself
    is checked when the daemon starts, by robot_daemon.capture.writer)."""
    for name, low, high in (("capture_max_mb", 1.0, 1e9), ("capture_margin", 0.0, 0.5),
                            ("capture_rate", 1e-3, 1e6)):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                low <= value <= high):
            raise ConfigError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    triggers = config.capture_triggers
    if (not isinstance(triggers, tuple | list) or not triggers
            or any(t not in CAPTURE_TRIGGERS for t in triggers)):
        raise ConfigError(f"capture_triggers must be some of {', '.join(CAPTURE_TRIGGERS)},"
                          f" got {triggers!r}")

